#include <twine/error.h>

#include <string.h>

const char *tw_strerror(int code)
{
    switch (code) {
#define TW__ERR_TEXT(name, value, text)                                                            \
    case value:                                                                                    \
        return text;
        TW_ERRNO_MAP(TW__ERR_TEXT)
        TW_OWN_ERROR_MAP(TW__ERR_TEXT)
#undef TW__ERR_TEXT
    case 0:
        return "success";
    }
    if (code < 0 && code > TW__ERRNO_LIMIT)
        return strerror(-code); /* glibc's table is static and never NULL */
    return "unknown error";
}

const char *tw_err_name(int code)
{
    switch (code) {
#define TW__ERR_NAME(name, value, text)                                                            \
    case value:                                                                                    \
        return #name;
        TW_ERRNO_MAP(TW__ERR_NAME)
        TW_OWN_ERROR_MAP(TW__ERR_NAME)
#undef TW__ERR_NAME
    case 0:
        return "OK";
    }
    if (code < 0 && code > TW__ERRNO_LIMIT) {
        const char *name = strerrorname_np(-code);
        if (name)
            return name;
    }
    return "UNKNOWN";
}
