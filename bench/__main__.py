"""`python -m bench` (and the `diffbench` command): the light start-up checks first, then the app.

bench.preflight.check imports Hydra's compose API, the config schema and the torch-free registries
only, so a typo in a key, a metric name or a path exits 2 in about a second; bench.app (torch,
pandas, the suites, Hydra's app) is imported only once they pass (issue 26: every error used to
come after ~19 s of imports)."""
import sys

from bench.preflight import check


def main() -> None:
    checked = check(sys.argv[1:])
    from bench.app import main as app_main   # heavy imports, after the light checks passed (see above)
    app_main(checked)


if __name__ == "__main__":
    main()
