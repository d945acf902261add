"""Decoding: greedy and beam search over the model's key/value cache, one decoder interface
(`make_decoder` -> `DecodeResult`), the `Translator`, and attention maps.

Floor 2: imports the model (nn), the data's vocabulary and the shared modules at the top
level; never training.
"""
