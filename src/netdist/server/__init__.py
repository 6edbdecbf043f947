"""The netdist server.

Importing it does two things before the rest of the server is imported:

- it turns gRPC's fork handlers off (:mod:`netdist.server.grpc_fork`): gRPC reads
  that setting as it is imported;
- it pins glibc's mmap threshold (:mod:`netdist.server.allocator`), so that large
  blocks freed from the first allocation on go back to the operating system;
  pinned later, an upload's chunks grew the server by half as much again.
"""

from netdist.server.allocator import pin_mmap_threshold
from netdist.server.grpc_fork import no_grpc_fork_handlers

no_grpc_fork_handlers()
pin_mmap_threshold()
