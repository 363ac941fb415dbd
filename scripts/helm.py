#!/usr/bin/env python3
"""Helm's install, upgrade, uninstall and test against the cluster of KUBECONFIG, through
Helm v4's own Go SDK (PyPI helm-python-sdk): no helm binary is needed. For tests and for
developers on a machine without helm; users run `helm` itself.

  scripts/helm.py install   RELEASE CHART -n NS [--values JSON] [--create-namespace]
  scripts/helm.py upgrade   RELEASE CHART -n NS [--values JSON]
  scripts/helm.py uninstall RELEASE -n NS
  scripts/helm.py test      RELEASE -n NS [--timeout SECONDS]

CHART: a chart directory or a packaged chart (.tgz). Prints the release's status and NOTES;
on failure Helm's error on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["install", "upgrade", "uninstall", "test"])
    parser.add_argument("release")
    parser.add_argument("chart", nargs="?")
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--values", default="{}", help="values as a JSON object")
    parser.add_argument("--create-namespace", action="store_true")
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args()
    try:
        import helm_python as helm
    except ImportError:
        sys.exit("helm.py: helm-python-sdk is not installed: run scripts/testenv/install.sh")
    if args.action in ("install", "upgrade") and not args.chart:
        sys.exit(f"helm.py: {args.action} needs CHART (a directory or a .tgz)")
    values = json.loads(args.values)
    config = helm.Config(kubeconfig_path=os.environ.get("KUBECONFIG"), namespace=args.namespace)
    try:
        with config:
            if args.action in ("install", "upgrade"):
                chart = helm.Chart.load(args.chart)
                with chart:
                    if args.action == "install":
                        release = config.install(chart, args.release, values, namespace=args.namespace,
                                                 create_namespace=args.create_namespace,
                                                 timeout=args.timeout)
                    else:
                        release = config.upgrade(chart, args.release, values, namespace=args.namespace,
                                                 timeout=args.timeout)
                print(f"{release['name']}: revision {release['revision']}, {release['status']}, "
                      f"chart {release['chart_name']}-{release['chart_version']}")
                print(release.get("notes", ""))
            elif args.action == "uninstall":
                config.uninstall(args.release, timeout=args.timeout)
                print(f"{args.release}: uninstalled")
            else:
                result = config.test(args.release, timeout=args.timeout, logs=True)
                print(result.get("logs", ""))
                print(f"{args.release}: tests passed")
    except helm.HelmError as e:
        print(f"helm.py: {args.action} {args.release}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
