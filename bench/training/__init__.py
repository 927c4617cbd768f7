"""Generic training for the pipeline families (`python -m bench.train`): see trainer.py for the loop,
trainable.py for how a family plugs in, state.py for resumable checkpoints."""
