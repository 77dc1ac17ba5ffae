"""CPU backends of DiffWave's residual stack, and the one rule that picks a backend.

:mod:`audiodiff.kernels.backend` names the backends (``"eager"``, ``"cpu-fast"``,
``"cpu-fused"``) and resolves ``"auto"``; :mod:`audiodiff.kernels.fast` is the in-place inference
kernel, :mod:`audiodiff.kernels.fused` the im2col training kernel with its hand-written backward.
The eager stack, the reference both match, is :func:`audiodiff.model_compute.eager_stack`. The
kernels import nothing of ours.
"""
