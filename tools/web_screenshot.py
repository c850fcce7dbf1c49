"""Make the README's screenshot of the feed page: the bundled demo, served and shown in Chromium.

    .venv/bin/python -m tools.web_screenshot --out docs/web-page.png

Enrolls the demo's Alice and Bruno from `app/demo/enroll/` into a throw-away speaker store, runs
`run_live.py --input app/demo/conversation.wav --serve 127.0.0.1:0` with it (so their names are
verified live), opens the page in headless Chromium (tools.browser) and saves a screenshot once
the demo has ended. Needs Debian's chromium and chromium-driver (.ci/setup installs them).
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile

from tools.browser import DEMO_WAV, ROOT, ServedApp, available, chromium, wait_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "web-page.png"), help="PNG to write")
    parser.add_argument("--speed", type=float, default=1.0, help="play the demo this many times real time")
    parser.add_argument("--size", default="1280,800", help="window size WIDTH,HEIGHT")
    args = parser.parse_args(argv)
    missing = available()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="unispeech-shot-") as tmp:
        store = os.path.join(tmp, "speakers.db")
        for name in ("Alice", "Bruno"):
            clips = sorted(glob.glob(os.path.join(ROOT, "app", "demo", "enroll", name, "*.wav")))
            subprocess.run([sys.executable, os.path.join(ROOT, "run_live.py"), "enroll", name, "--input", *clips,
                            "--speakers-db", store], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        app = ServedApp(["--input", DEMO_WAV, "--speed", str(args.speed), "--headless", "--speakers-db", store,
                         "--replay-grace", "60"])
        try:
            with chromium([f"--window-size={args.size}"]) as driver:
                driver.get(app.url)
                wait_for(driver, "window.feedState.ended", 300, "the end of the demo")
                driver.execute_script("document.querySelectorAll('.revised').forEach(c => c.classList.remove('revised'));")
                driver.save_screenshot(args.out)
        finally:
            app.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
