# Every external dependency of logit is discovered here, and only here.
# All of them are Debian 12 packages (see .ci/install-deps.sh); nothing is downloaded.

# LibTorch (libtorch-dev). Its config exports no namespaced target: link ${TORCH_LIBRARIES}.
find_package(Torch REQUIRED)
# Torch's config adds flags for its own consumers; keep our warnings readable.
string(REPLACE "-Wno-error" "" TORCH_CXX_FLAGS "${TORCH_CXX_FLAGS}")

find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED)  # the fused CPU kernel; LibTorch already uses libgomp
find_package(ZLIB REQUIRED)
find_package(absl REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(GTest REQUIRED)
if(NOT LOGIT_KERNEL_ONLY)
  # libzip's CMake config references tools Debian ships in other packages; use pkg-config.
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(LIBZIP REQUIRED IMPORTED_TARGET libzip)
  find_package(CLI11 REQUIRED)
  # Protobuf has no CMake config on Debian 12: CMake's FindProtobuf (protobuf::libprotobuf,
  # protobuf::protoc, protobuf_generate). gRPC ships a config (gRPC::grpc++, the C++ plugin).
  find_package(Protobuf REQUIRED)
  find_package(gRPC CONFIG REQUIRED)
  pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)
  # ONNX export uses libonnx-dev's generated classes from libonnx_proto (LibTorch loads the same
  # library); compiling a second copy of onnx.proto would collide in the protobuf registry.
  find_package(ONNX CONFIG REQUIRED)
  find_package(yaml-cpp REQUIRED)
  # Metrics (prometheus-cpp-dev's core: metric types and the text format; served over HTTP by
  # libmicrohttpd-dev, see worker/common/metrics_endpoint.h) and logs (libspdlog-dev).
  find_package(prometheus-cpp CONFIG REQUIRED)
  pkg_check_modules(MICROHTTPD REQUIRED IMPORTED_TARGET libmicrohttpd)
  find_package(spdlog REQUIRED)
  # SHA-256 of data files (libssl-dev's libcrypto; gRPC already links OpenSSL).
  find_package(OpenSSL REQUIRED)
endif()

# A header-only interface target that carries LibTorch's include dirs, libs and defines
# (USE_C10D_GLOO among them). Only the few kernel sources link it.
add_library(logit_torch INTERFACE)
target_link_libraries(logit_torch INTERFACE ${TORCH_LIBRARIES})
# A CUDA LibTorch (a GPU machine's PyTorch) carries ProcessGroupNCCL; its header needs nccl.h
# (pass -DNCCL_INCLUDE_DIR=... when it is not on the default paths).
if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda)
  find_path(NCCL_INCLUDE_DIR nccl.h)
  if(NCCL_INCLUDE_DIR)
    target_include_directories(logit_torch INTERFACE ${NCCL_INCLUDE_DIR})
    target_compile_definitions(logit_torch INTERFACE USE_C10D_NCCL)
    message(STATUS "logit: CUDA LibTorch with NCCL (nccl.h in ${NCCL_INCLUDE_DIR})")
  else()
    message(WARNING "logit: CUDA LibTorch but no nccl.h: CUDA jobs fall back to Gloo")
  endif()
endif()

# One helper adds a GoogleTest executable and registers it with CTest.
#   logit_add_test(NAME <name> SOURCES <files...> LIBS <targets...> [LABELS <labels...>])
function(logit_add_test)
  cmake_parse_arguments(T "" "NAME" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  set_tests_properties(${T_NAME} PROPERTIES
    ENVIRONMENT "LOGIT_SOURCE_DIR=${PROJECT_SOURCE_DIR};LOGIT_BINARY_DIR=${PROJECT_BINARY_DIR};OMP_NUM_THREADS=1"
    LABELS "${T_LABELS}")
endfunction()
