module urun.test/gorunner

go 1.19
