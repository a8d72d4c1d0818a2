"""Which Harvard lists each role takes, in a module that imports nothing: the corpus the students and the posterior
encoder learn from, the list held out for checkpoint choice, and the lists only verdicts judge (1-10)."""

CORPUS_LISTS = list(range(11, 31))  # the synthetic corpus of notebooks 03/04; lists 1-10 are judged, 31 held out
HELDOUT_LISTS = [31]
JUDGED_SENTENCES = 10  # held-out sentences (all of list 31) the judges score per packed checkpoint
