package storagenode_test

const benchHelperEnv = "FINCRYPT_BENCH_HELPER"

func runBenchHelper(dir string) int { return 0 }
