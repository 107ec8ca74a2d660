"""The flow around the gateware: generate Verilog, co-simulate, build bitstreams, flash, and the
device resource model every fit check uses."""
