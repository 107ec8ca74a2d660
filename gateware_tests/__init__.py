"""cocotb testbenches of the generated Verilog (installed as ternpe.gateware_tests) and their pytest drivers."""
