"""Screenshot of a running registry's dashboard, taken at the moment of a live migration.

    python -m tests.dashboard.screenshot http://127.0.0.1:8000 docs/dashboard.png

Opens the dashboard in headless Chromium, waits (up to ``--wait`` seconds) until a
migration arrives on the open page (its arrow is drawn for 12 s), then saves the picture;
if none arrives it saves the page as it is. Used for the README's picture of a demo run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mycelium.procs import DeadlineExceeded
from tests.dashboard.browser import (
    chromium,
    click_node,
    missing_browser,
    save_screenshot,
    until,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="registry base URL")
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for a move")
    parser.add_argument("--select", help="click the node of this name first (its panel)")
    args = parser.parse_args(argv)
    reason = missing_browser()
    if reason:
        sys.stderr.write(f"error: {reason}\n")
        return 1
    with chromium() as driver:
        driver.get(f"{args.url.rstrip('/')}/dashboard")
        until(driver, "window.myceliumDashboard && window.myceliumDashboard.model.live",
              timeout=30, what="the dashboard to catch up")  # fmt: skip
        if args.select:
            node_id = until(driver, "window.myceliumDashboard.model.nodes.size > 0 && "
                            "[...window.myceliumDashboard.model.nodes.values()]"
                            f".find(n => n.name === {json.dumps(args.select)})?.node_id",
                            timeout=30, what=f"node {args.select}")  # fmt: skip
            click_node(driver, node_id)
        try:
            until(driver, "window.myceliumDashboard.cy.edges('.move').length > 0",
                  timeout=args.wait, what="a live migration")  # fmt: skip
            until(driver, "!window.myceliumDashboard.moving()",
                  timeout=10, what="the moving node to arrive")  # fmt: skip
        except DeadlineExceeded:
            sys.stderr.write("no live migration within the wait; saving the page as it is\n")
        save_screenshot(driver, args.out.resolve())
    sys.stdout.write(f"{args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
