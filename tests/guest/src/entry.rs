//! Entry points, in assembly:
//! * `_start` (ELF entry): Linux 64-bit boot protocol — long mode, paging on, RSI = zero page;
//! * `pvh_start32` (PVH note, XEN_ELFNOTE_PHYS32_ENTRY): 32-bit protected mode, paging off,
//!   EBX = `hvm_start_info`; it builds the identity page tables and enters long mode itself;
//! * `ap_trampoline` (copied below 1 MiB, SIPI target): real mode → 32-bit → long mode for APs.
//!
//! All of them end up in Rust on the guest's own stack: `rust_main(protocol, info)` for the boot
//! CPU, `ap_main()` for the others.

use core::arch::global_asm;

/// `rust_main`'s first argument for the 64-bit boot protocol.
pub const PROTOCOL_LINUX64: u64 = 1;
/// `rust_main`'s first argument for PVH.
pub const PROTOCOL_PVH: u64 = 2;

/// Stack of the boot CPU.
pub const BSP_STACK_SIZE: usize = 64 * 1024;
/// Stack of each AP.
pub const AP_STACK_SIZE: usize = 16 * 1024;
/// Most CPUs the guest brings up.
pub const MAX_CPUS: usize = 32;

#[repr(C, align(16))]
pub struct Stack<const N: usize>(pub [u8; N]);

#[unsafe(no_mangle)]
pub static mut BSP_STACK: Stack<BSP_STACK_SIZE> = Stack([0; BSP_STACK_SIZE]);

/// Top of the stack the next AP takes (set by the boot CPU before each SIPI).
#[unsafe(no_mangle)]
pub static mut AP_STACK_TOP: u64 = 0;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .code64
    .globl _start
_start:
    cli
    cld
    lea rsp, [rip + BSP_STACK + {bsp_stack}]
    mov rdi, {linux64}
    call rust_main
2:  hlt
    jmp 2b
    "#,
    bsp_stack = const BSP_STACK_SIZE,
    linux64 = const PROTOCOL_LINUX64,
);

global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long pvh_start32
    .balign 4
    .popsection

    .section .text, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    mov $AP_BOOT_STACK_TOP, %esp
    mov %ebx, %esi                  /* hvm_start_info, kept for rust_main */
    /* PML4[0] -> PDPT, PDPT[0..4] -> PD0..PD3, PDs map 4 GiB in 2 MiB pages */
    mov $GUEST_PDPT, %eax
    or $3, %eax
    mov %eax, GUEST_PML4
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $12, %eax
    add $GUEST_PD, %eax
    or $3, %eax
    mov %eax, GUEST_PDPT(,%ecx,8)
    inc %ecx
    cmp $4, %ecx
    jne 1b
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, GUEST_PD(,%ecx,8)
    mov %ecx, %eax
    shr $11, %eax
    mov %eax, GUEST_PD+4(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b
    lgdt GUEST_GDTR
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    call enter_long_mode32
    ljmp $0x08, $pvh_start64

    /* PAE + OSFXSR, CR3 = guest tables, EFER.LME, then CR0.PG: long mode (compatibility). */
enter_long_mode32:
    mov %cr4, %eax
    or $0x620, %eax
    mov %eax, %cr4
    mov $GUEST_PML4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0
    ret

    .globl ap_entry32
ap_entry32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $AP_BOOT_STACK_TOP, %esp
    call enter_long_mode32
    ljmp $0x08, $ap_entry64

    .code64
    .macro load_data_segments
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    .endm

pvh_start64:
    load_data_segments
    lea BSP_STACK+{bsp_stack}(%rip), %rsp
    mov %esi, %esi                  /* zero-extend the start info address */
    mov $({pvh}), %edi
    call rust_main
3:  hlt
    jmp 3b

ap_entry64:
    load_data_segments
    mov AP_STACK_TOP(%rip), %rsp
    call ap_main
4:  cli
    hlt
    jmp 4b

    /* Real-mode AP trampoline: copied to TRAMPOLINE_ADDR (4 KiB aligned, below 1 MiB) and
       started by SIPI with CS = TRAMPOLINE_ADDR >> 4, IP = 0. Position independent (DS = CS). */
    .code16
    .globl ap_trampoline
    .globl ap_trampoline_end
ap_trampoline:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_tramp_gdtr - ap_trampoline)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x20, $ap_entry32
    .balign 4
ap_tramp_gdtr:
    .word GUEST_GDT_END - GUEST_GDT - 1
    .long GUEST_GDT
ap_trampoline_end:
    .code64

    .section .data
    .balign 16
    .globl GUEST_GDT
GUEST_GDT:
    .quad 0
    .quad 0x00af9b000000ffff        /* 0x08 code64 */
    .quad 0x00cf93000000ffff        /* 0x10 data */
    .quad 0
    .quad 0x00cf9b000000ffff        /* 0x20 code32 */
GUEST_GDT_END:
    .balign 4
    .word 0
GUEST_GDTR:
    .word GUEST_GDT_END - GUEST_GDT - 1
    .quad GUEST_GDT

    .section .bss
    .balign 4096
    .globl GUEST_PML4
GUEST_PML4: .skip 4096
GUEST_PDPT: .skip 4096
GUEST_PD:   .skip 4 * 4096
    .balign 16
    .skip 256
AP_BOOT_STACK_TOP:
    "#,
    bsp_stack = const BSP_STACK_SIZE,
    pvh = const PROTOCOL_PVH,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline: u8;
    static ap_trampoline_end: u8;
    static GUEST_PML4: u8;
}

/// The AP trampoline's code bytes.
pub fn trampoline() -> (*const u8, usize) {
    let start = &raw const ap_trampoline;
    let end = &raw const ap_trampoline_end;
    (start, end as usize - start as usize)
}

/// Physical address of the guest's own PML4 (identity map of 4 GiB, built by `paging`).
pub fn pml4_addr() -> u64 {
    &raw const GUEST_PML4 as u64
}
