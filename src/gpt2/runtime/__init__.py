"""Where and how a model runs: devices, precision, processes and wrappers. Used by every command.

``gpt2.runtime.device``       ``--device`` / ``--autocast`` resolution, the device a model is on, autocast
``gpt2.runtime.distributed``  the torchrun process group (DistContext) and every collective we use
``gpt2.runtime.parallel``     DDP / FSDP2 / torch.compile wrapping, gradient sync, and ``unwrap_model``

This layer sits just above the model: it may import ``gpt2.model``, ``gpt2.config`` and
``gpt2.errors``, never train / evaluate / generate / app, so all of those can share it.
Import from the modules themselves (e.g. ``from gpt2.runtime.parallel import unwrap_model``).
"""
