# Every dependency comes from a Debian 12 package, found through pkg-config
# (scripts/install-deps.sh installs them).
find_package(PkgConfig REQUIRED)
pkg_check_modules(ZMQ REQUIRED IMPORTED_TARGET libzmq)
pkg_check_modules(LUA REQUIRED IMPORTED_TARGET lua5.4)
pkg_check_modules(MSGPACK REQUIRED IMPORTED_TARGET msgpack)
pkg_check_modules(UV REQUIRED IMPORTED_TARGET libuv)
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
pkg_check_modules(SQLITE REQUIRED IMPORTED_TARGET sqlite3)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
pkg_check_modules(CRYPTO REQUIRED IMPORTED_TARGET libcrypto)
pkg_check_modules(CMOCKA IMPORTED_TARGET cmocka)

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
