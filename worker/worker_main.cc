#include <iostream>

#include "worker/worker_cli.h"

int main(int argc, char** argv) { return logit::RunWorkerCli(argc, argv, std::cout, std::cerr); }
