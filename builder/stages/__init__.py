"""The pipeline's stages, one module each, in the order a requirement meets them:

    plan      resolve the closure per target (`resolve`), decide cached / download / build /
              skip, settle each build's cache key (`keys`; `accel` says which packages vary
              by accelerator)
    fetch     download with streamed sha256, checked against the index and the pins
    build     PEP 517 in an isolated environment of the target's interpreter
    repair    auditwheel to the target's policy, honestly tagged
    verify    install with no compiler, import (`isa` looks for instructions old CPUs lack)
    publish   the store, the index pages, the records, the status page, targets.json

A stage knows nothing of the others' order or of concurrency: `pipeline` runs them.
"""
