"""The other candidate for `clip-onnx serve`, for measurement only: the same contract on NVIDIA PyTriton.

PyTriton runs the same ``tritonserver`` (the nvidia-pytriton wheel's) with a
Python-backend proxy model per endpoint that forwards each batch over ZeroMQ
and shared memory to Python callables in this process; here the callables run
``ClipModel`` (decode or tokenize, graph, normalisation).  `clip-onnx serve-bench
--url` then drives it exactly as it drives `clip-onnx serve`.  See
benchmarks/NOTES.md, "serving", for the comparison and why serve does not use it.

Run it in a Python with nvidia-pytriton and numpy<2 (e.g. a venv with
`pip install 'clip-onnx[serve]'`):

    python benchmarks/serve_pytriton.py BUNDLE --name demo --http-port 8100 --grpc-port 8101 --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from clip_onnx.runtime import ClipModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--name", default="demo")
    parser.add_argument("--http-port", type=int, default=8100)
    parser.add_argument("--grpc-port", type=int, default=8101)
    parser.add_argument("--metrics-port", type=int, default=8102)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per tower")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--queue-delay-us", type=int, default=0)
    args = parser.parse_args()

    model = ClipModel.load(args.bundle, threads=args.threads, batch_size=args.max_batch)
    dim = model.embed_dim

    @batch
    def images(IMAGE):  # noqa: N803 - PyTriton passes inputs by their tensor names
        return {"EMBEDDING": model.encode_image([bytes(item) for item in IMAGE.reshape(-1)])}

    @batch
    def texts(TEXT):  # noqa: N803
        return {"EMBEDDING": model.encode_text([bytes(item).decode("utf-8") for item in TEXT.reshape(-1)])}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
    )
    batching = ModelConfig(
        max_batch_size=args.max_batch, batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)
    )
    with Triton(config=config) as triton:
        for suffix, source, function in (("image", "IMAGE", images), ("text", "TEXT", texts)):
            triton.bind(
                model_name=f"{args.name}_{suffix}",
                infer_func=function,
                inputs=[Tensor(name=source, dtype=bytes, shape=(1,))],
                outputs=[Tensor(name="EMBEDDING", dtype=np.float32, shape=(dim,))],
                config=batching,
                strict=True,
            )
        print(f"PyTriton serving {args.bundle} as {args.name}_image and {args.name}_text", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
