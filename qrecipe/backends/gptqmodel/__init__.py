"""The gptqmodel adapter (GPTQ, AWQ, RTN) and its helpers: the fast layer loop, the
tensor-core Hessian, shard hashing, garbage-collection tuning and the patches they need."""
