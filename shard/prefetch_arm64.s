#include "textflag.h"

// func prefetch(addr uintptr)
TEXT ·prefetch(SB), NOSPLIT|NOFRAME, $0-8
	MOVD	addr+0(FP), R0
	PRFM	(R0), PLDL1KEEP
	RET

// func prefetchSpan(addr, n uintptr)
TEXT ·prefetchSpan(SB), NOSPLIT|NOFRAME, $0-16
	MOVD	addr+0(FP), R0
	MOVD	n+8(FP), R1
	ADD	R0, R1, R2
	SUB	$1, R2
	AND	$~63, R0
loop:
	PRFM	(R0), PLDL1KEEP
	ADD	$64, R0
	CMP	R2, R0
	BLS	loop
	RET
