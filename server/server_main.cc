#include <iostream>

#include "server/server_app.h"

int main(int argc, char** argv) { return logit::RunServerCli(argc, argv, std::cout, std::cerr); }
