"""The one path from data to published recommendations.

    dataset -> split -> fit -> evaluate -> artifact (+ one metadata layout)  recvae.workflow.fit
    artifact -> register -> gate (same validation users) -> promote, export  recvae.workflow.publish

`recvae train`, `recvae demo`, `recvae nightly`, the Python API and the benchmarks call these
functions; none of them re-implements a step.
"""
