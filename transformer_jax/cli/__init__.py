"""Command-line entry points (train, translate) and the checks on their inputs.

The top floor: it may import everything below; nothing imports it.
"""
