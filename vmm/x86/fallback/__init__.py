"""The VMM's instruction fallback for this platform's ring-0 emulator.

On a software (PVM) KVM every guest ring-0 instruction runs in KVM's
instruction emulator, which stops with KVM_EXIT_INTERNAL_ERROR /
KVM_INTERNAL_ERROR_EMULATION on a few instructions Linux executes (int3,
fwait, ldmxcsr, popcnt, cmpxchg16b, clac/stac...). That exit carries the
instruction's bytes; ``instructions.Fallback`` decodes them (decode.py),
carries the instruction out on the vCPU's registers and on guest memory
reached through the guest's own page tables (pagewalk.py), and resumes.
On hardware KVM that exit never comes and none of this runs.
"""
