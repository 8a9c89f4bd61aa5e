"""Pure domain: entities, validation, canonical hashing, the filter language.

Nothing here does I/O or imports a database or network library, so every
layer above can use it and it is unit-testable without a disk.
"""
