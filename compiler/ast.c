/* ast.c -- the syntax tree: construction and an S-expression dump (tests, debugging).
 * Nodes live in the compilation arena (cc_arena). */
#include "cdlc.h"

#include <stdlib.h>
#include <string.h>

Ast *ast_new(AstKind k, Loc loc) {
    Ast *a = NEW(Ast);
    a->kind = k;
    a->loc = loc;
    a->depth = 1;
    return a;
}

void ast_push(AstList *l, Ast *x) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 4;
        l->v = arena_grow(cc_arena, l->v, sizeof(Ast *) * (size_t)l->cap, sizeof(Ast *) * (size_t)cap);
        l->cap = cap;
    }
    l->v[l->n++] = x;
}

static const char *const kind_names[AST_KIND_COUNT] = {
    [A_ERR] = "error", [A_INT] = "int", [A_REAL] = "real", [A_STR] = "str", [A_BOOL] = "bool",
    [A_NAME] = "name", [A_BIN] = "bin", [A_NEG] = "neg", [A_PIPE] = "pipe", [A_CALL] = "call",
    [A_KWARG] = "kw", [A_INDEX] = "index", [A_ATTR] = "attr", [A_SLICE] = "slice", [A_LIST] = "list", [A_TYPE] = "type",
    [A_RANGE] = "range", [S_ASSIGN] = "assign", [S_COLLECT] = "collect", [S_INPUT] = "input",
    [S_PARAM] = "param", [S_OUTPUT] = "output", [S_LOSS] = "loss", [S_ENTRY] = "entry",
    [S_FOR] = "for", [S_RETURN] = "return", [S_TRAIN] = "train", [D_MODEL] = "model",
    [D_BLOCK] = "block", [D_IMPORT] = "import", [D_FILE] = "file",
};

const char *ast_kind_name(AstKind k) {
    return k >= 0 && k < AST_KIND_COUNT && kind_names[k] ? kind_names[k] : "?";
}

static void dump_list(FILE *f, const AstList *l) {
    for (int i = 0; i < l->n; i++) {
        fputc(' ', f);
        ast_dump(f, l->v[i]);
    }
}

/* " (a b c)": the items of l in parentheses, separated by spaces. */
static void dump_group(FILE *f, const AstList *l) {
    fputs(" (", f);
    for (int i = 0; i < l->n; i++) {
        if (i) fputc(' ', f);
        ast_dump(f, l->v[i]);
    }
    fputc(')', f);
}

static void dump_opt(FILE *f, const Ast *a) {
    fputc(' ', f);
    if (a) ast_dump(f, a);
    else fputs("_", f);
}

/* ast_dump: one S-expression, no newline.  Lists are printed inline; statement bodies
 * as a parenthesised group so that the structure is unambiguous. */
void ast_dump(FILE *f, const Ast *a) {
    if (!a) {
        fputs("_", f);
        return;
    }
    fprintf(f, "(%s", ast_kind_name(a->kind));
    switch (a->kind) {
    case A_ERR: break;
    case A_INT: fprintf(f, " %lld", (long long)a->ival); break;
    case A_REAL: fprintf(f, " %s", a->text); break;
    case A_STR: fprintf(f, " \"%s\"", a->text); break;
    case A_BOOL: fprintf(f, " %d", (int)a->ival); break;
    case A_NAME: fprintf(f, " %s", a->name); break;
    case A_BIN:
        if (a->op == 'P') fputs(" **", f);
        else if (strchr("lgen", a->op)) fprintf(f, " %s", a->op == 'l' ? "<=" : a->op == 'g' ? ">=" : a->op == 'e' ? "==" : "!=");
        else fprintf(f, " %c", a->op);
        dump_opt(f, a->a);
        dump_opt(f, a->b);
        break;
    case A_NEG: dump_opt(f, a->a); break;
    case A_PIPE: dump_opt(f, a->a); dump_opt(f, a->b); break;
    case A_CALL: fprintf(f, " %s", a->name); dump_list(f, &a->list); break;
    case A_KWARG: fprintf(f, " %s", a->name); dump_opt(f, a->a); break;
    case A_INDEX: dump_opt(f, a->a); dump_list(f, &a->list); break;
    case A_ATTR: dump_opt(f, a->a); fprintf(f, " %s", a->name); break;
    case A_SLICE: dump_opt(f, a->a); dump_opt(f, a->b); dump_opt(f, a->c); break;
    case A_LIST: dump_list(f, &a->list); break;
    case A_TYPE: fprintf(f, " %s", a->name); dump_list(f, &a->list); break;
    case A_RANGE: fprintf(f, "%s", a->op ? " reversed" : ""); dump_opt(f, a->a); dump_opt(f, a->b); break;
    case S_ASSIGN:
        fputs(" (", f);
        for (int i = 0; i < a->list.n; i++) fprintf(f, "%s%s", i ? " " : "", a->list.v[i]->name);
        fputc(')', f);
        dump_opt(f, a->a);
        dump_list(f, &a->list2);
        break;
    case S_COLLECT: fprintf(f, " %s", a->name); dump_opt(f, a->a); dump_opt(f, a->b); break;
    case S_INPUT: fprintf(f, " %s", a->name); dump_opt(f, a->a); break;
    case S_PARAM: fprintf(f, " %s", a->name); dump_opt(f, a->a); dump_opt(f, a->b); break;
    case S_OUTPUT: dump_opt(f, a->a); if (a->name) fprintf(f, " as %s", a->name); break;
    case S_LOSS: dump_opt(f, a->a); break;
    case S_ENTRY:
        fprintf(f, " %s", a->name);
        dump_group(f, &a->list);
        dump_group(f, &a->list2);
        break;
    case S_FOR:
        fprintf(f, " %s", a->name);
        dump_opt(f, a->a);
        dump_group(f, &a->list);
        break;
    case S_RETURN:
    case S_TRAIN: dump_list(f, &a->list); break;
    case D_MODEL:
    case D_BLOCK:
        fprintf(f, " %s", a->name);
        dump_group(f, &a->list);
        dump_list(f, &a->list2);
        break;
    case D_IMPORT: fprintf(f, " \"%s\"", a->text); break;
    case D_FILE: dump_list(f, &a->list); break;
    case AST_KIND_COUNT: break;
    }
    fputc(')', f);
}

const char *ast_str(const Ast *a) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) die("open_memstream failed");
    ast_dump(f, a);
    fclose(f);
    const char *s = arena_strndup(cc_arena, buf, len);
    free(buf);
    return s;
}
