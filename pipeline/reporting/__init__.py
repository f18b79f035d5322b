"""Reporting stage: evaluation of a scorer on labelled questions (MAP@3, recall@k of the
source passage, curves), the rule that says which passage is a question's source, and plots.
"""
