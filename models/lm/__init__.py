"""Word n-gram language models for CTC decoding.

`CTCBeamDecoder` (beam search with an ARPA word LM on flashlight-text), the modified Kneser-Ney
ARPA builder (`python -m models.lm.build`), and a synthetic greedy-vs-LM check
(`python -m models.lm.synthetic_check`). See docs/lm.md.
"""

from models.lm.arpa import NgramModel, count_ngrams, estimate, normalize_line, read_arpa, write_arpa
from models.lm.decoder import CTCBeamDecoder, find_language_model

__all__ = [
    "CTCBeamDecoder",
    "NgramModel",
    "count_ngrams",
    "estimate",
    "find_language_model",
    "normalize_line",
    "read_arpa",
    "write_arpa",
]
