"""Training of the embedded model: synthetic corpus (`corpus`, `voices`, `text`, `mixing`), the
multi-task recipe (`model`, `batches`, `train`, `finetune_sv`), export to Hugging Face folders
(`export`), evaluation (`evaluate`, `evaluate_stream`, `scoring`) and the bundled demo (`demo`).
See docs/training.md."""
