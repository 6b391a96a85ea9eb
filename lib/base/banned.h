/*
 * banned.h - functions that are too easy to misuse.
 *
 * Included last by lib/base/base.h, after the system headers that declare these
 * functions, so only calls in our own code turn into compile errors (git's
 * banned.h). Use snprintf, tr_buf, memcpy with an explicit length, strtol,
 * gmtime_r and localtime_r instead.
 */
#ifndef TR_BANNED_H
#define TR_BANNED_H

#define BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) BANNED(strncpy)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef strtok
#define strtok(x, y) BANNED(strtok)
#undef gmtime
#define gmtime(t) BANNED(gmtime)
#undef localtime
#define localtime(t) BANNED(localtime)
#undef atoi
#define atoi(s) BANNED(atoi)

#endif
