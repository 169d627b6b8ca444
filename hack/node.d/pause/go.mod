module clip-operator.local/pause

go 1.21
