"""Training: the loss, the schedule, the jitted step, and the loop in three parts — building
a run (run.py), evaluating it (evaluator.py), and the loop itself (loop.py).

Floor 3: imports the model, the data, the shared modules and decoding (for BLEU).
"""
