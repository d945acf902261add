"""Models in and out: Hugging Face Marian / OPUS-MT checkpoints, and CTranslate2.

    marian_format   the two models' configs and weight names, mapped both ways (NumPy only)
    marian_import   a Marian directory -> (config, MarianVocab, params): Translator.from_pretrained
    marian_export   a work directory -> a directory MarianMTModel / MarianTokenizer load
    ctranslate2     that directory -> a CTranslate2 model with the same translations

Reading and writing model.safetensors needs `safetensors`, pytorch_model.bin needs torch, and
the CTranslate2 conversion needs transformers, torch and ctranslate2 (the `interop` extra).
Nothing here is imported by `import transformer_jax`.
"""
