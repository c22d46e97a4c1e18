# A tiny test guest: a 512-byte boot sector for SeaBIOS.
# - prints a banner on COM1,
# - echoes COM1 input from the UART receive interrupt (IRQ4), idling in `hlt`,
# - draws a banner on the VGA text screen and echoes keystrokes of the PS/2 keyboard (the
#   BIOS's IRQ1 handler queues them; int 16h reads them) to COM1 and to the screen,
# - powers off through ACPI (PM1a control, port 0x604, S5) when the power button is pressed
#   (the SCI, IRQ9), which is what libvirt's graceful shutdown sends.
# Assembled with --defsym BUSY=1 it spins instead of idling (a guest that uses its vCPU).
	.code16
	.globl _start
_start:
	cli
	xor %ax, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov $0x7c00, %sp
	movw $uart_isr, 0x0c*4		# IRQ4 -> INT 0x0C
	movw $0, 0x0c*4+2
	movw $sci_isr, 0x71*4		# IRQ9 -> INT 0x71
	movw $0, 0x71*4+2
	mov $0x3f9, %dx			# UART: interrupts off while configuring
	xor %al, %al
	out %al, %dx
	mov $0x3fb, %dx			# DLAB on
	mov $0x80, %al
	out %al, %dx
	mov $0x3f8, %dx			# divisor 1: 115200 baud
	mov $1, %al
	out %al, %dx
	mov $0x3f9, %dx
	xor %al, %al
	out %al, %dx
	mov $0x3fb, %dx			# 8N1
	mov $0x03, %al
	out %al, %dx
	mov $0x3fa, %dx			# FIFO on, cleared, 1-byte trigger
	mov $0x07, %al
	out %al, %dx
	mov $0x3fc, %dx			# DTR, RTS, OUT2 (IRQ line to the PIC)
	mov $0x0b, %al
	out %al, %dx
	mov $0x3f9, %dx			# interrupt on received data
	mov $0x01, %al
	out %al, %dx
	mov $0x0003, %ax		# VGA text mode 3 (80x25), cleared
	int $0x10
	mov $0xb800, %ax		# row 0: the banner, white on blue
	mov %ax, %es
	xor %di, %di
	mov $banner, %si
	mov $0x1f, %ah
	mov $80, %cx
1:	lodsb
	cmp $0x20, %al
	jae 2f
	mov $0x20, %al			# past the text (and its CR LF): spaces
	dec %si
2:	stosw
	loop 1b
	xor %ax, %ax
	mov %ax, %es
	mov $0x02, %ah			# cursor to row 2
	xor %bh, %bh
	mov $0x0200, %dx
	int $0x10
	mov $banner, %si		# the banner on COM1 says: ready, screen drawn
	call puts
	mov $0x602, %dx			# PM1a enable: power button
	mov $0x0100, %ax
	out %ax, %dx
	mov $0x604, %dx			# PM1a control: SCI_EN
	in %dx, %ax
	or $1, %ax
	out %ax, %dx
	in $0x21, %al			# PIC: unmask IRQ2 (cascade) and IRQ4 (SeaBIOS has IRQ1 on)
	and $0xeb, %al
	out %al, $0x21
	in $0xa1, %al			# slave PIC: unmask IRQ9
	and $0xfd, %al
	out %al, $0xa1
	sti
idle:
.ifdef BUSY
	jmp idle
.else
	hlt
	mov $0x01, %ah			# a key in the BIOS keyboard buffer?
	int $0x16
	jz idle
	xor %ah, %ah			# take it: %al is its character
	int $0x16
	test %al, %al
	jz idle				# no character (arrows, function keys)
	call putc			# echo to COM1
	mov $0x0e, %ah			# and to the screen
	mov $0x0007, %bx
	int $0x10
	jmp idle
.endif

uart_isr:
	push %ax
	push %dx
1:	mov $0x3fd, %dx			# line status: data ready?
	in %dx, %al
	test $1, %al
	jz 2f
	mov $0x3f8, %dx
	in %dx, %al
	call putc
	jmp 1b
2:	mov $0x20, %al			# EOI
	out %al, $0x20
	pop %dx
	pop %ax
	iret

sci_isr:
	mov $0x600, %dx			# PM1a status
	in %dx, %ax
	out %ax, %dx			# acknowledge (write 1 to clear)
	test $0x0100, %ax
	jz 1f
	mov $bye, %si
	call puts
	mov $0x604, %dx			# SLP_TYP 0 (S5) | SLP_EN: power off
	mov $0x2001, %ax
	out %ax, %dx
1:	mov $0x20, %al			# EOI slave and master
	out %al, $0xa0
	out %al, $0x20
	iret

putc:					# %al -> COM1
	push %dx
	push %ax
1:	mov $0x3fd, %dx
	in %dx, %al
	test $0x20, %al
	jz 1b
	pop %ax
	mov $0x3f8, %dx
	out %al, %dx
	pop %dx
	ret

puts:					# %si: NUL-terminated string
	lodsb
	test %al, %al
	jz 1f
	call putc
	jmp puts
1:	ret

banner:	.asciz "virtwire test guest\r\n"
bye:	.asciz "power button: off\r\n"
	.org 510
	.word 0xaa55
