module gowin

go 1.19
