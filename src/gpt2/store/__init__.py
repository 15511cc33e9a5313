"""Everything on disk: ``files`` (crash-safe writes), ``tensors`` (safetensors, weights checks, tensor trees),
``checkpoint`` (our format), ``rundir`` (RUN_DIR's names), ``checkpointer`` (step_N/) and ``load`` (any source)."""
