"""Answering stage: predict as a library (retrieve, score, rank, write the submission
and its report all-or-nothing) and the time budget that keeps a run inside its limit.
"""
