"""Serve an existing Triton model repository on the nvidia-pytriton wheel's tritonserver, for measurement only.

`clip-onnx serve` runs only the python layout.  To measure the ensemble layout
(and the repository of an older clip-onnx) on this machine, this runs any
repository on the same server, with tests/serving/triton_stand_in as the
``onnxruntime`` backend: a Python-based TEST STAND-IN for Triton's C++ ONNX
Runtime backend, which no pip package ships.  Each graph model therefore costs
one more Python hop here than in the stock container; benchmarks/NOTES.md,
"serving", accounts for it.  Drive it with `clip-onnx serve-bench --url`.

    python benchmarks/serve_repository.py REPOSITORY --python SERVER_VENV/bin/python --http-port 8200
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from pathlib import Path

from clip_onnx.triton.server import Ports, TritonServer, find_server, prepare_backends, server_command

STAND_IN = Path(__file__).resolve().parents[1] / "tests" / "serving" / "triton_stand_in" / "onnxruntime" / "model.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--python", required=True, help="the server venv's Python (numpy<2, nvidia-pytriton)")
    parser.add_argument("--http-port", type=int, default=8200)
    parser.add_argument("--grpc-port", type=int, default=8201)
    parser.add_argument("--metrics-port", type=int, default=8202)
    args = parser.parse_args()

    install = find_server(args.python)
    work = Path(tempfile.mkdtemp(prefix="serve-repository-"))
    try:
        backends = prepare_backends(install, work / "backends")
        (backends / "onnxruntime").mkdir()
        shutil.copy(STAND_IN, backends / "onnxruntime" / "model.py")
        ports = Ports("127.0.0.1", args.http_port, args.grpc_port, args.metrics_port).resolved()
        tag = f"serve_repository_{ports.http}_"
        command = server_command(install, args.repository.absolute(), backends, ports, "warning", tag)
        server = TritonServer(command, install.environment(), f"127.0.0.1:{ports.http}", tag, work)
        server.start(print)
        models = sorted(p.name for p in args.repository.iterdir() if (p / "config.pbtxt").is_file())
        try:
            server.wait_ready(models, 600, lambda ready: print("READY:", ", ".join(ready), flush=True))
            print(f"serving {args.repository} on 127.0.0.1:{ports.http} (gRPC {ports.grpc})", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            while server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
