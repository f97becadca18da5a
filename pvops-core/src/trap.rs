//! The one set of CPU exception stubs both backends use: [`trap_stubs!`](crate::trap_stubs) emits, in the
//! backend's crate, a table of entry stubs that push an error code (0 where the CPU pushes
//! none: every vector but 8, 10-14, 17, 21, 29 and 30) and the vector, then call the backend's handler with a [`TrapFrame`]. The native
//! IDT and the Xen trap table point at the same kind of stub; pvops-core itself contains no
//! assembly.

/// What a stub leaves on the stack for the handler: vector and error code, then the frame the
/// CPU (bare metal) or Xen's bounce (PV guest) pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct TrapFrame {
    /// The exception vector.
    pub vector: u32,
    /// The error code (0 for the vectors without one).
    pub error: u32,
    /// The faulting instruction.
    pub eip: u32,
    /// Its code segment.
    pub cs: u32,
    /// The flags.
    pub eflags: u32,
}

static_assertions::assert_eq_size!(TrapFrame, [u32; 5]);

/// Emits exception stubs for vectors `0..count` (at most 32) into the calling crate, and
/// declares `table`, the array of their addresses (for an IDT or a Xen trap table). Each
/// stub calls `handler`, an `extern "C" fn(&TrapFrame) -> !`.
///
/// `pvops_core::trap_stubs!(my_trap_stubs, 20, my_trap);`
#[macro_export]
macro_rules! trap_stubs {
    ($table:ident, $count:literal, $handler:path) => {
        ::core::arch::global_asm!(
            concat!(
                ".macro ", stringify!($table), "_stub n, err\n",
                ".if \\n < {count}\n",
                ".section .text.", stringify!($table), ", \"ax\"\n",
                stringify!($table), "_\\n:\n",
                ".if \\err == 0\n",
                "push $0\n",
                ".endif\n",
                "push $\\n\n",
                "jmp ", stringify!($table), "_common\n",
                ".section .rodata.", stringify!($table), ", \"a\"\n",
                ".long ", stringify!($table), "_\\n\n",
                ".endif\n",
                ".endm\n",
                ".section .rodata.", stringify!($table), ", \"a\"\n",
                ".balign 4\n",
                ".global ", stringify!($table), "\n",
                stringify!($table), ":\n",
                stringify!($table), "_stub 0, 0\n",
                stringify!($table), "_stub 1, 0\n",
                stringify!($table), "_stub 2, 0\n",
                stringify!($table), "_stub 3, 0\n",
                stringify!($table), "_stub 4, 0\n",
                stringify!($table), "_stub 5, 0\n",
                stringify!($table), "_stub 6, 0\n",
                stringify!($table), "_stub 7, 0\n",
                stringify!($table), "_stub 8, 1\n",
                stringify!($table), "_stub 9, 0\n",
                stringify!($table), "_stub 10, 1\n",
                stringify!($table), "_stub 11, 1\n",
                stringify!($table), "_stub 12, 1\n",
                stringify!($table), "_stub 13, 1\n",
                stringify!($table), "_stub 14, 1\n",
                stringify!($table), "_stub 15, 0\n",
                stringify!($table), "_stub 16, 0\n",
                stringify!($table), "_stub 17, 1\n",
                stringify!($table), "_stub 18, 0\n",
                stringify!($table), "_stub 19, 0\n",
                stringify!($table), "_stub 20, 0\n",
                stringify!($table), "_stub 21, 1\n",
                stringify!($table), "_stub 22, 0\n",
                stringify!($table), "_stub 23, 0\n",
                stringify!($table), "_stub 24, 0\n",
                stringify!($table), "_stub 25, 0\n",
                stringify!($table), "_stub 26, 0\n",
                stringify!($table), "_stub 27, 0\n",
                stringify!($table), "_stub 28, 0\n",
                stringify!($table), "_stub 29, 1\n",
                stringify!($table), "_stub 30, 1\n",
                stringify!($table), "_stub 31, 0\n",
                ".section .text.", stringify!($table), ", \"ax\"\n",
                stringify!($table), "_common:\n",
                "push %esp\n",
                "call {handler}\n",
                "2:\n",
                "jmp 2b\n",
            ),
            count = const $count,
            handler = sym $handler,
            options(att_syntax)
        );
        const _: () = assert!($count <= 32, "at most 32 exception vectors");
        unsafe extern "C" {
            static $table: [u32; $count];
        }
    };
}
