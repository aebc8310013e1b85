/* SPDX-License-Identifier: Apache-2.0 */
/* ferry: the C interface of VMware's VixDiskLib as its consumers (nbdkit's vddk plugin,
 * hence CDI, Forklift and virt-v2v) call it — ferry's own declarations, written from the
 * layouts recorded in shared/reference/vddk.md (x86-64, nbdkit's "VDDK 7.0" structs).
 *
 * Only these 23 functions are exported from libvixDiskLib.so.8 (vddk/vddk.map).  Every
 * offset and size a consumer relies on is checked below at compile time, so a layout
 * change cannot ship unnoticed.
 */
#ifndef FERRY_VIXDISKLIB_H
#define FERRY_VIXDISKLIB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Low 16 bits: the code (VIX_ERROR_CODE); ferry keeps a message id in the high 32 bits
 * so that GetErrorText can give the server's own words from any thread.
 */
typedef uint64_t VixError;
#define VIX_ERROR_CODE(err) ((err)&0xFFFF)

#define VIX_OK 0
#define VIX_E_FAIL 1
#define VIX_E_OUT_OF_MEMORY 2
#define VIX_E_INVALID_ARG 3
#define VIX_E_FILE_NOT_FOUND 4
#define VIX_E_NOT_SUPPORTED 6
#define VIX_E_FILE_READ_ONLY 11
#define VIX_E_AUTHENTICATION_FAIL 35
#define VIX_E_HOST_CONNECTION_LOST 36
#define VIX_E_DISK_OUTOFRANGE 16007
#define VIX_E_CANNOT_CONNECT_TO_HOST 18000
#define VIX_ASYNC 25000

#define VIXDISKLIB_SECTOR_SIZE 512
#define VIXDISKLIB_MIN_CHUNK_SIZE 128            /* sectors: 64 KiB */
#define VIXDISKLIB_MAX_CHUNK_NUMBER (512 * 1024) /* chunks per QueryAllocatedBlocks */

#define VIXDISKLIB_FLAG_OPEN_UNBUFFERED 1
#define VIXDISKLIB_FLAG_OPEN_SINGLE_LINK 2
#define VIXDISKLIB_FLAG_OPEN_READ_ONLY 4
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_ZLIB 16
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_FASTLZ 32
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_SKIPZ 64

typedef void *VixDiskLibConnection;
typedef void *VixDiskLibHandle;
typedef void VixDiskLibGenericLogFunc (const char *fmt, va_list args);
typedef void (*VixDiskLibCompletionCB) (void *data, VixError result);

enum VixDiskLibCredType {
  VIXDISKLIB_CRED_UID = 1,
  VIXDISKLIB_CRED_SESSIONID = 2,
  VIXDISKLIB_CRED_TICKETID = 3,
  VIXDISKLIB_CRED_SSPI = 4,
};

enum VixDiskLibSpecType {
  VIXDISKLIB_SPEC_VMX = 0,
  VIXDISKLIB_SPEC_VSTORAGE_OBJECT = 1,
};

enum VixDiskLibAdapterType {
  VIXDISKLIB_ADAPTER_IDE = 1,
  VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC = 2,
  VIXDISKLIB_ADAPTER_SCSI_LSILOGIC = 3,
};

struct VixDiskLibVStorageObjectSpec {
  char *id;
  char *datastoreMoRef;
  char *ssId;
};

typedef struct {
  char *vmxSpec; /* "moref=vm-16" */
  char *serverName;
  char *thumbPrint;
  long reserved1;
  enum VixDiskLibCredType credType;
  union {
    struct {
      char *userName;
      char *password;
    } uid;
    struct {
      char *cookie;
      char *userName;
      char *key;
    } sessionId;
  } creds;
  uint32_t port;        /* 0: 443 */
  uint32_t nfcHostPort; /* 0: 902 */
  char *reserved3;
  char reserved4[8];
  void *reserved5;
  union {
    struct VixDiskLibVStorageObjectSpec vStorageObjSpec;
  } spec;
  enum VixDiskLibSpecType specType;
} VixDiskLibConnectParams;

struct VixDiskLibGeometry {
  uint32_t cylinders;
  uint32_t heads;
  uint32_t sectors;
};

typedef struct {
  struct VixDiskLibGeometry biosGeo;
  struct VixDiskLibGeometry physGeo;
  uint64_t capacity; /* sectors */
  enum VixDiskLibAdapterType adapterType;
  int numLinks;
  char *parentFileNameHint;
  char *uuid;
  uint32_t logicalSectorSize; /* read by consumers of library version >= 7 */
  uint32_t physicalSectorSize;
} VixDiskLibInfo;

typedef struct {
  uint64_t offset; /* sectors */
  uint64_t length;
} VixDiskLibBlock;

typedef struct {
  uint32_t numBlocks;
  VixDiskLibBlock blocks[];
} VixDiskLibBlockList;

typedef struct {
  int diskType;
  enum VixDiskLibAdapterType adapterType;
  uint16_t hwVersion;
  uint64_t capacity;
  uint32_t logicalSectorSize;
  uint32_t physicalSectorSize;
} VixDiskLibCreateParams;

#define FERRY_VIX_LAYOUT(type, field, off)                                                 \
  _Static_assert(offsetof (type, field) == (off), #type "." #field " is at " #off)
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, vmxSpec, 0);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, serverName, 8);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, thumbPrint, 16);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, reserved1, 24);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, credType, 32);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, creds, 40);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, creds.uid.userName, 40);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, creds.uid.password, 48);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, creds.sessionId.cookie, 40);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, creds.sessionId.userName, 48);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, creds.sessionId.key, 56);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, port, 64);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, nfcHostPort, 68);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, reserved3, 72);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, reserved4, 80);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, reserved5, 88);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, spec, 96);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, spec.vStorageObjSpec.id, 96);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, spec.vStorageObjSpec.datastoreMoRef, 104);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, spec.vStorageObjSpec.ssId, 112);
FERRY_VIX_LAYOUT (VixDiskLibConnectParams, specType, 120);
_Static_assert(sizeof (VixDiskLibConnectParams) == 128, "VixDiskLibConnectParams is 128");

FERRY_VIX_LAYOUT (VixDiskLibInfo, biosGeo, 0);
FERRY_VIX_LAYOUT (VixDiskLibInfo, physGeo, 12);
FERRY_VIX_LAYOUT (VixDiskLibInfo, capacity, 24);
FERRY_VIX_LAYOUT (VixDiskLibInfo, adapterType, 32);
FERRY_VIX_LAYOUT (VixDiskLibInfo, numLinks, 36);
FERRY_VIX_LAYOUT (VixDiskLibInfo, parentFileNameHint, 40);
FERRY_VIX_LAYOUT (VixDiskLibInfo, uuid, 48);
FERRY_VIX_LAYOUT (VixDiskLibInfo, logicalSectorSize, 56);
FERRY_VIX_LAYOUT (VixDiskLibInfo, physicalSectorSize, 60);
_Static_assert(sizeof (VixDiskLibInfo) == 64, "VixDiskLibInfo is 64");
_Static_assert(sizeof (struct VixDiskLibGeometry) == 12, "VixDiskLibGeometry is 12");

FERRY_VIX_LAYOUT (VixDiskLibBlockList, numBlocks, 0);
FERRY_VIX_LAYOUT (VixDiskLibBlockList, blocks, 8);
_Static_assert(sizeof (VixDiskLibBlockList) == 8, "VixDiskLibBlockList header is 8");
_Static_assert(sizeof (VixDiskLibBlock) == 16, "VixDiskLibBlock is 16");

FERRY_VIX_LAYOUT (VixDiskLibCreateParams, diskType, 0);
FERRY_VIX_LAYOUT (VixDiskLibCreateParams, adapterType, 4);
FERRY_VIX_LAYOUT (VixDiskLibCreateParams, hwVersion, 8);
FERRY_VIX_LAYOUT (VixDiskLibCreateParams, capacity, 16);
FERRY_VIX_LAYOUT (VixDiskLibCreateParams, logicalSectorSize, 24);
FERRY_VIX_LAYOUT (VixDiskLibCreateParams, physicalSectorSize, 28);
_Static_assert(sizeof (VixDiskLibCreateParams) == 32, "VixDiskLibCreateParams is 32");

_Static_assert(sizeof (VixError) == 8, "VixError is 64 bits");

/* A consumer that declares its own pointers of these names (as nbdkit does) defines
 * FERRY_VIX_TYPES_ONLY to take the types alone.
 */
#ifndef FERRY_VIX_TYPES_ONLY

#define FERRY_VIX_API __attribute__ ((visibility ("default")))

FERRY_VIX_API VixError VixDiskLib_InitEx (uint32_t major, uint32_t minor,
                                          VixDiskLibGenericLogFunc *log,
                                          VixDiskLibGenericLogFunc *warn,
                                          VixDiskLibGenericLogFunc *panic,
                                          const char *lib_dir, const char *config_file);
FERRY_VIX_API void VixDiskLib_Exit (void);
FERRY_VIX_API const char *VixDiskLib_ListTransportModes (void);
FERRY_VIX_API char *VixDiskLib_GetErrorText (VixError err, const char *locale);
FERRY_VIX_API void VixDiskLib_FreeErrorText (char *text);
FERRY_VIX_API VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams (void);
FERRY_VIX_API void VixDiskLib_FreeConnectParams (VixDiskLibConnectParams *params);
FERRY_VIX_API VixError VixDiskLib_ConnectEx (const VixDiskLibConnectParams *params,
                                             char read_only, const char *snapshot_ref,
                                             const char *transport_modes,
                                             VixDiskLibConnection *connection);
FERRY_VIX_API VixError VixDiskLib_Disconnect (VixDiskLibConnection connection);
FERRY_VIX_API VixError VixDiskLib_Open (const VixDiskLibConnection connection,
                                        const char *path, uint32_t flags,
                                        VixDiskLibHandle *handle);
FERRY_VIX_API VixError VixDiskLib_Close (VixDiskLibHandle handle);
FERRY_VIX_API const char *VixDiskLib_GetTransportMode (VixDiskLibHandle handle);
FERRY_VIX_API VixError VixDiskLib_GetInfo (VixDiskLibHandle handle, VixDiskLibInfo **info);
FERRY_VIX_API void VixDiskLib_FreeInfo (VixDiskLibInfo *info);
FERRY_VIX_API VixError VixDiskLib_Read (VixDiskLibHandle handle, uint64_t start_sector,
                                        uint64_t nr_sectors, unsigned char *buf);
FERRY_VIX_API VixError VixDiskLib_Write (VixDiskLibHandle handle, uint64_t start_sector,
                                         uint64_t nr_sectors, const unsigned char *buf);
FERRY_VIX_API VixError VixDiskLib_ReadAsync (VixDiskLibHandle handle, uint64_t start_sector,
                                             uint64_t nr_sectors, unsigned char *buf,
                                             VixDiskLibCompletionCB callback, void *data);
FERRY_VIX_API VixError VixDiskLib_WriteAsync (VixDiskLibHandle handle,
                                              uint64_t start_sector, uint64_t nr_sectors,
                                              const unsigned char *buf,
                                              VixDiskLibCompletionCB callback, void *data);
FERRY_VIX_API VixError VixDiskLib_Wait (VixDiskLibHandle handle);
FERRY_VIX_API VixError VixDiskLib_Flush (VixDiskLibHandle handle);
FERRY_VIX_API VixError VixDiskLib_Create (const VixDiskLibConnection connection,
                                          const char *path,
                                          const VixDiskLibCreateParams *create_params,
                                          void *progress_unused,
                                          void *progress_data_unused);
FERRY_VIX_API VixError VixDiskLib_QueryAllocatedBlocks (VixDiskLibHandle handle,
                                                        uint64_t start_sector,
                                                        uint64_t nr_sectors,
                                                        uint64_t chunk_size,
                                                        VixDiskLibBlockList **block_list);
FERRY_VIX_API VixError VixDiskLib_FreeBlockList (VixDiskLibBlockList *block_list);

#endif /* FERRY_VIX_TYPES_ONLY */

#endif /* FERRY_VIXDISKLIB_H */
