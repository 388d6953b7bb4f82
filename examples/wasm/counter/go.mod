module example.com/ottava/counter

go 1.26
