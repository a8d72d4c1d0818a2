"""Processes of their own: the long training runs (train_job), the GPU part of notebook 05 (device_run), the SpeechT5
cost on a GPU (speecht5_bench), the time estimate of a profile (eta). May import every package but report."""
