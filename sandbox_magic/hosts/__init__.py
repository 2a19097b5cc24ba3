"""Where a sandbox's code runs.

A host owns a sandbox's modules and live objects and is how a reload, a call
and a query reach them (:class:`~sandbox_magic.hosts.base.SandboxHost`).  The
in-kernel host (:class:`~sandbox_magic.hosts.kernel.KernelHost`) is the first
implementation: modules live in the kernel's own process.  Hosts that run a
sandbox elsewhere (a child process, a cluster) implement the same protocol;
the API, versions, history and panels do not change with the host.
"""

from .base import SandboxHost
from .kernel import KernelHost

__all__ = ["KernelHost", "SandboxHost"]
