"""Evaluation: HellaSwag (lm-evaluation-harness compatible), validation loss and bpb, CORE, any lm-eval task.

``gpt2.evaluate.hellaswag``  load HellaSwag (official raw or preprocessed JSONL) and score it
``gpt2.evaluate.scoring``    batched log-likelihood of (context, continuation) pairs
``gpt2.evaluate.loss``       mean loss / perplexity / bits per byte over a fixed set of validation tokens
``gpt2.evaluate.core``       CORE: DCLM's 22 in-context tasks from nanochat's eval bundle, scored as nanochat does
``gpt2.evaluate.harness``    lm-evaluation-harness backend ``gpt2-scratch`` (imports lm-eval)
``gpt2.evaluate.harness_tasks``  ``gpt2 eval lm-eval``: presets, published numbers, saved results
``gpt2.evaluate.slots``      what ``gpt2 train`` evaluates every N steps, and how reports show those metrics
``gpt2.evaluate.cli``        the ``gpt2 eval`` command

Every function works the same in one process and under torchrun: when torch.distributed is
initialised each rank scores a disjoint slice and the totals are all-reduced (the collectives,
devices, autocast and ``unwrap_model`` come from ``gpt2.runtime``).
"""
