"""The netdist server.

Importing it pins glibc's mmap threshold (:mod:`netdist.server.allocator`):
this runs before the rest of the server is imported, so that large blocks
freed from the first allocation on go back to the operating system; pinned
later, an upload's chunks grew the server by half as much again.
"""

from netdist.server.allocator import pin_mmap_threshold

pin_mmap_threshold()
