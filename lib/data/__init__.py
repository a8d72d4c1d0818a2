"""The study's data: the synthetic LJSpeech-format corpus and its features, beside the shipped data files
(harvard_sentences.txt). Imports lib.core only."""
