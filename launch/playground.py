"""Try a model in the browser: a local page to type a sentence, pick a voice and a checkpoint, listen, and
compare two checkpoints (docs/playground.md).

    python launch/playground.py runs/demo                 # then open http://127.0.0.1:7860
    python launch/playground.py exported/demo --save-dir playground/demo

RUN_OR_EXPORT is a training run (its complete checkpoint tags are offered, the latest first picked) or an
exported / released model folder. Generations are saved with their settings under <run>/playground/ (or
--save-dir; for an export, playground/ beside it), the newest 200 kept. The server binds 127.0.0.1 unless
--host says otherwise, never opens a public link and sends nothing anywhere (analytics off).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: nothing leaves the machine

from higgs_ds.cli_options import add_scorer_args, bounded, byte_size, device_name, positive_int, scorer_config  # noqa: E402
from higgs_ds.device import resolve_device, resolve_precision, torch_dtype  # noqa: E402
from higgs_ds.errors import ArgumentParser, ConfigError, run_cli  # noqa: E402
from higgs_ds.playground.inputs import MAX_UPLOAD_BYTES  # noqa: E402
from higgs_ds.playground.session import Playground, PlaygroundConfig  # noqa: E402

log = logging.getLogger(__name__)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _parse(argv):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="run dir (or its checkpoints/ or a tag dir) or exported model dir")
    p.add_argument("--port", type=bounded(int, 1, 65535), default=7860)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--save-dir", type=Path, help="where generations are saved (default: <run>/playground, or "
                                                 "playground/ beside an export)")
    p.add_argument("--device", type=device_name, default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--codec-path", help="local copy of the codec the checkpoint's audio spec names")
    p.add_argument("--time-limit", type=bounded(float, 0, low_open=True), default=120.0,
                   help="seconds one generation may take; it stops there (inside the decoding loop)")
    p.add_argument("--frame-limit", type=positive_int, default=1500,
                   help="the largest maximum length a page may ask for, in frames (25 = 1 s)")
    p.add_argument("--max-upload", type=byte_size, default=MAX_UPLOAD_BYTES, help="largest reference upload")
    p.add_argument("--keep", type=positive_int, default=200, help="generations kept in the save folder")
    p.add_argument("--no-score", action="store_true", help="no metrics (DNSMOS, speaker similarity, CER)")
    add_scorer_args(p)
    return p.parse_args(argv)


def build(a: argparse.Namespace) -> Playground:
    """Everything but the web server: the source checked, its default checkpoint and codec loaded."""
    device = resolve_device(a.device)
    scorer = None if a.no_score else scorer_config(a)
    dtype = torch_dtype(resolve_precision(a.dtype, device))
    pg = Playground(PlaygroundConfig(a.checkpoint, a.save_dir, str(device), dtype, a.codec_path, a.time_limit,
                                     a.frame_limit, a.keep, a.max_upload, scorer))
    loaded = pg.load()  # a source that cannot generate fails here, before the page is served
    pg.codec(loaded.audio_spec)
    return pg


def host_warning(host: str) -> str | None:
    """What binding to `host` exposes, when it is more than this machine."""
    if host in LOCAL_HOSTS:
        return None
    return (f"warning: --host {host} serves the playground to every machine that can reach this one, without a "
            f"login: anyone there can run the model and read its saved generations")


def serve(pg: Playground, a: argparse.Namespace, block: bool = True):
    """The page of `pg` on a.host:a.port: one generation at a time (the others queue), never a public link.
    block=False returns the running app (close it with `.close()`)."""
    from higgs_ds.playground.ui import CSS, build_app

    app = build_app(pg)
    app.queue(default_concurrency_limit=1)
    log.info("playground: %s on http://%s:%d (saving to %s)", a.checkpoint, a.host, a.port, pg.store.folder)
    app.launch(server_name=a.host, server_port=a.port, share=False, max_file_size=a.max_upload, show_error=False,
               ssr_mode=False, mcp_server=False, enable_monitoring=False, inbrowser=False, css=CSS,
               footer_links=[], prevent_thread_lock=not block, quiet=True)
    return app


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = _parse(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError("gradio is not installed", where="launch/playground.py",
                          fix="pip install '.[playground]' (or make setup)") from None
    warning = host_warning(a.host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    serve(build(a), a)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
