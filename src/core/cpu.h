/* SPDX-License-Identifier: MIT */
#ifndef HA_CPU_H
#define HA_CPU_H

/*
 * cpu_relax(): the hint for one turn of a spin-wait loop.  It saves power,
 * yields the core to an SMT sibling and tells the CPU the loop is a spin,
 * so leaving it does not flush the pipeline on a memory-order violation.
 * It is never a barrier for other CPUs: every loop that calls it must load
 * what it waits for with an atomic (acquire) load.  The "memory" clobber
 * only stops the compiler from hoisting that load out of the loop.
 */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
        __asm__ __volatile__("pause" ::: "memory");
#elif defined(__aarch64__)
        /* yield, not isb: a HINT that costs nothing on cores without SMT,
         * where isb would stall on every turn for no gain (these spins are
         * short and bounded by a clock, not by a count of turns). */
        __asm__ __volatile__("yield" ::: "memory");
#elif defined(__riscv)
        /* Zihintpause "pause" is FENCE w,0 (0x0100000f): a no-op on harts
         * without the extension, so its encoding is safe where the
         * assembler (Debian 12's binutils at -march=rv64gc) lacks the name. */
#  if defined(__riscv_zihintpause)
        __asm__ __volatile__("pause" ::: "memory");
#  else
        __asm__ __volatile__(".4byte 0x0100000f" ::: "memory");
#  endif
#else
        __asm__ __volatile__("" ::: "memory");
#endif
}

#endif
