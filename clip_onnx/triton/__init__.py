"""NVIDIA Triton model repositories from bundles: `clip-onnx triton BUNDLE -o REPO`.

``repository.write_repository`` writes them (it needs ``clip-onnx[triton]``
for Triton's config schema); ``steps`` and ``step_model.py`` run inside the
server and need only the runtime.  Nothing is imported here, so the server
side never pulls in the writer's dependencies.
"""
