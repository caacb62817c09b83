package bot

// DiskProblem is diskProblem, for the tests.
var DiskProblem = diskProblem
