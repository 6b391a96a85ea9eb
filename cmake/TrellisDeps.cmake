# Every dependency comes from a Debian 12 package, found through pkg-config
# (scripts/install-deps.sh installs them).
find_package(PkgConfig REQUIRED)
pkg_check_modules(ZMQ REQUIRED IMPORTED_TARGET libzmq)
# Debian's libzmq.pc puts `-isystem /usr/include/mit-krb5` in its Cflags,
# which CMake files under include directories on the first configure and
# under compile options on every later one: the flags change, and a second
# `make demo` rebuilt everything. zmq.h needs none of Kerberos' headers, so
# the target gets fixed properties whatever the cache holds.
list(FILTER ZMQ_INCLUDE_DIRS EXCLUDE REGEX "mit-krb5")
set_target_properties(PkgConfig::ZMQ PROPERTIES INTERFACE_COMPILE_OPTIONS ""
                                                INTERFACE_INCLUDE_DIRECTORIES "${ZMQ_INCLUDE_DIRS}")
pkg_check_modules(LUA REQUIRED IMPORTED_TARGET lua5.4)
pkg_check_modules(MSGPACK REQUIRED IMPORTED_TARGET msgpack)
pkg_check_modules(UV REQUIRED IMPORTED_TARGET libuv)
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
pkg_check_modules(SQLITE REQUIRED IMPORTED_TARGET sqlite3)
# The shared retrieval index on PostgreSQL (worker/pg_index*.c).
pkg_check_modules(PQ REQUIRED IMPORTED_TARGET libpq)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
pkg_check_modules(CRYPTO REQUIRED IMPORTED_TARGET libcrypto)
pkg_check_modules(CMOCKA IMPORTED_TARGET cmocka)
# The etcd client (lib/etcd*.c): gRPC's C core, linked with TLS support
# (grpc, not grpc_unsecure) for --etcd-cacert/--etcd-cert/--etcd-key.
pkg_check_modules(GRPC REQUIRED IMPORTED_TARGET grpc gpr)
pkg_check_modules(PROTOBUFC REQUIRED IMPORTED_TARGET libprotobuf-c)
find_program(PROTOC_C protoc-c REQUIRED)

# Generates C for the etcd proto subset (proto/etcd/*.proto) into
# <build>/proto/etcd at build time; sets out_var to the generated .c files.
# Called from lib/CMakeLists.txt: a custom command's rule belongs to targets
# of the directory that declares it.
function(tr_etcd_proto_sources out_var)
  set(src_dir ${CMAKE_SOURCE_DIR}/proto/etcd)
  set(out_dir ${CMAKE_BINARY_DIR}/proto/etcd)
  set(outputs ${out_dir}/kv.pb-c.c ${out_dir}/kv.pb-c.h ${out_dir}/rpc.pb-c.c
              ${out_dir}/rpc.pb-c.h)
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
    COMMAND ${PROTOC_C} --c_out=${out_dir} -I ${src_dir} kv.proto rpc.proto
    DEPENDS ${src_dir}/kv.proto ${src_dir}/rpc.proto
    COMMENT "Generating C for the etcd protocol (protoc-c)"
    VERBATIM)
  # Both library variants compile these files: one target owns the rule so
  # that parallel makes do not run protoc-c twice at once.
  add_custom_target(tr_etcd_proto DEPENDS ${outputs})
  set(${out_var} ${out_dir}/kv.pb-c.c ${out_dir}/rpc.pb-c.c PARENT_SCOPE)
endfunction()

# llhttp: Debian's node-llhttp ships the generated C sources, not a library.
set(LLHTTP_SRC_DIR /usr/share/llhttp)
set(LLHTTP_INC_DIR /usr/share/include/llhttp)
if(NOT EXISTS ${LLHTTP_SRC_DIR}/llhttp.c OR NOT EXISTS ${LLHTTP_INC_DIR}/llhttp.h)
  message(FATAL_ERROR "llhttp sources not found: apt-get install node-llhttp")
endif()
add_library(tr_llhttp STATIC ${LLHTTP_SRC_DIR}/llhttp.c ${LLHTTP_SRC_DIR}/api.c
                             ${LLHTTP_SRC_DIR}/http.c)
target_include_directories(tr_llhttp SYSTEM PUBLIC ${LLHTTP_INC_DIR})
set_target_properties(tr_llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON C_EXTENSIONS ON)
target_compile_options(tr_llhttp PRIVATE -w)

# libunistring (Unicode normalisation for ingestion) ships no pkg-config file.
find_path(UNISTRING_INCLUDE_DIR uninorm.h)
find_library(UNISTRING_LIBRARY unistring)
if(NOT UNISTRING_INCLUDE_DIR OR NOT UNISTRING_LIBRARY)
  message(FATAL_ERROR "libunistring not found: apt-get install libunistring-dev")
endif()
