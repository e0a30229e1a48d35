"""Write a run's report: runs/<run>/report.html, its curves, listening evals and predictions on one page.

    python launch/report.py runs/demo

Works on a finished run and on one still training (what is there so far); training writes it at its end.
Open the file in any browser; the page links the run's wavs and spectrograms by relative paths, so copy
the whole run folder to view it elsewhere.
"""

import argparse
import sys
from pathlib import Path

from higgs_ds.errors import ArgumentParser, run_cli
from higgs_ds.report import write_report


def _main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="the run directory (e.g. runs/demo)")
    args = p.parse_args(argv)
    print(write_report(args.run_dir))
    return 0


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
