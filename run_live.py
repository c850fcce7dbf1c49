"""Live captions, speaker activity and voiceprints with UniSpeech-SAT: `python run_live.py --help`.

Wiring only: the command line lives in app/cli.py.
"""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
