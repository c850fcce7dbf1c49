"""UniSpeech-SAT in pure PyTorch: loads Hugging Face checkpoints unchanged and matches transformers.

Public API: the config, the backbone and its heads (`from_pretrained`, `save_pretrained`,
`forward`, `forward_head`), the feature extractor and the CTC vocabulary.
"""

from models.config import UniSpeechSatConfig
from models.ctc_vocab import CharSpan, CTCVocab, WordSpan
from models.feature_extraction import FeatureExtractor
from models.loading import CheckpointError, LoadReport
from models.outputs import (
    CausalLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
    UniSpeechSatBaseModelOutput,
    UniSpeechSatForPreTrainingOutput,
    XVectorOutput,
)
from models.unispeech_sat import (
    UniSpeechSatForAudioFrameClassification,
    UniSpeechSatForCTC,
    UniSpeechSatForPreTraining,
    UniSpeechSatForSequenceClassification,
    UniSpeechSatForXVector,
    UniSpeechSatModel,
)

__all__ = [
    "CTCVocab",
    "CharSpan",
    "CausalLMOutput",
    "CheckpointError",
    "FeatureExtractor",
    "LoadReport",
    "SequenceClassifierOutput",
    "TokenClassifierOutput",
    "UniSpeechSatBaseModelOutput",
    "UniSpeechSatConfig",
    "UniSpeechSatForAudioFrameClassification",
    "UniSpeechSatForCTC",
    "UniSpeechSatForPreTraining",
    "UniSpeechSatForPreTrainingOutput",
    "UniSpeechSatForSequenceClassification",
    "UniSpeechSatForXVector",
    "UniSpeechSatModel",
    "WordSpan",
    "XVectorOutput",
]
